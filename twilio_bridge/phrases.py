"""What the bridge itself says, in the caller's language (by VOICE_LANGUAGE's prefix)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phrases:
    greeting: str
    reprompt: str
    trouble: str
    transfer: str
    nobody_available: str
    goodbye: str
    cut_short: str
    menu_intro: str
    menu_option: str  # "{number}" and "{title}"
    hold: str
    still_holding: str


SPANISH = Phrases(
    greeting="Hola, gracias por llamar. ¿En qué le puedo ayudar?",
    reprompt="¿Sigue ahí? No le escuché.",
    trouble="Lo siento, tengo un problema técnico.",
    transfer="Le comunico con una persona, un momento por favor.",
    nobody_available="En este momento no hay nadie disponible. Por favor, llame más tarde. Hasta luego.",
    goodbye="Gracias por llamar. Hasta luego.",
    cut_short="El resto del mensaje es demasiado largo para leerlo por teléfono.",
    menu_intro="Diga o marque",
    menu_option="{number} para {title}",
    hold="Un momento, por favor.",
    still_holding="Sigo con su consulta, gracias por esperar.",
)

ENGLISH = Phrases(
    greeting="Hello, thanks for calling. How can I help you?",
    reprompt="Are you still there? I didn't hear you.",
    trouble="I'm sorry, I'm having a technical problem.",
    transfer="I'll put you through to a person, one moment please.",
    nobody_available="Nobody is available right now. Please call again later. Goodbye.",
    goodbye="Thanks for calling. Goodbye.",
    cut_short="The rest of this message is too long to read over the phone.",
    menu_intro="Say or press",
    menu_option="{number} for {title}",
    hold="One moment, please.",
    still_holding="I'm still on it, thanks for waiting.",
)


def phrases_for(language: str) -> Phrases:
    return ENGLISH if language.lower().startswith("en") else SPANISH
