"""Phone calls: the webhooks, the call's state, TwiML rendering, and holding callers while Rasa is slow."""
