"""What the bridge itself says, on the phone and in chats, in the language of VOICE_LANGUAGE's prefix."""
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
    chat_trouble: str
    chat_handoff: str  # "{number}"
    chat_no_person: str
    chat_slow_down: str
    hold: str
    still_holding: str
    chat_options: str  # the button that opens a list of options (at most 20 characters)
    voice_note_unheard: str


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
    chat_trouble="Lo siento, tengo un problema técnico y no pude responder a su mensaje. "
                 "Por favor, escríbame de nuevo en unos minutos.",
    chat_handoff="Para hablar con una persona, llame al {number}.",
    chat_no_person="En este momento no hay una persona disponible. Por favor, inténtelo más tarde.",
    chat_slow_down="Recibí muchos mensajes suyos en poco tiempo. Por favor, espere un minuto antes de escribir de nuevo.",
    hold="Un momento, por favor.",
    still_holding="Sigo con su consulta, gracias por esperar.",
    chat_options="Ver opciones",
    voice_note_unheard="Lo siento, no pude entender su nota de voz. ¿Me lo puede escribir, por favor?",
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
    chat_trouble="I'm sorry, I'm having a technical problem and could not answer your message. "
                 "Please write again in a few minutes.",
    chat_handoff="To talk to a person, call {number}.",
    chat_no_person="Nobody is available right now. Please try again later.",
    chat_slow_down="I got many messages from you in a short time. Please wait a minute before writing again.",
    hold="One moment, please.",
    still_holding="I'm still on it, thanks for waiting.",
    chat_options="See options",
    voice_note_unheard="I'm sorry, I couldn't make out your voice note. Could you write it to me, please?",
)


def phrases_for(language: str) -> Phrases:
    return ENGLISH if language.lower().startswith("en") else SPANISH
