"""WhatsApp and SMS: the webhooks, a user's conversation with Rasa, and rendering replies.

In REST mode a worker's conversation also has what `native` puts together, each part when its setting
turns it on: buttons to tap (`interactive`), "typing…" (`typing_indicator`) and voice notes understood
(`voice_notes`, heard by the host's one transcriber process: `hearing`).
"""
