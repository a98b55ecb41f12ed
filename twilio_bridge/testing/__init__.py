"""Plays Twilio and Rasa over real HTTP for tests, benchmarks and the CLI. Not product code."""
