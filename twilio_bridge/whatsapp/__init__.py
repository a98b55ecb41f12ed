"""WhatsApp and SMS: the webhooks, a user's conversation with Rasa, and rendering replies."""
