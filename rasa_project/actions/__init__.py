"""Custom actions of the card-blocking assistant, served by `python -m rasa_sdk --actions actions`."""
