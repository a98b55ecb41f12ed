"""A bridge that puts a Rasa assistant on the phone and on WhatsApp through Twilio."""
__version__ = "0.1.0"
