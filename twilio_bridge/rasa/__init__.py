"""Talking to Rasa's REST channel and reading its replies into one typed turn."""
