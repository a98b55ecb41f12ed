# The bridge: gunicorn serving twilio_voice_server:app on port 5001, as an unprivileged user.
#
#   docker build -t twilio-bridge .
#   docker run --env-file twilio.env -p 127.0.0.1:5001:5001 twilio-bridge
#
# Settings come from the environment at run time; nothing secret is in the image.
# The assistant's action server has its own image (rasa_project/Dockerfile).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --home-dir /app --no-create-home --shell /usr/sbin/nologin bridge

WORKDIR /app

# Dependencies in a layer of their own: rebuilt only when the pins change, not with every code change.
COPY twilio_requirements.txt .
RUN pip install --no-cache-dir -r twilio_requirements.txt
# WhatsApp voice notes (WHATSAPP_TRANSCRIBE=on) need the offline engine, about 130 MB more:
#   docker build --build-arg TRANSCRIBE=1 -t twilio-bridge .
ARG TRANSCRIBE=0
COPY transcribe_requirements.txt .
RUN if [ "$TRANSCRIBE" = 1 ]; then pip install --no-cache-dir -r transcribe_requirements.txt; fi

# The code stays root's, read-only to the service; it writes only state/ (STATE_URL's SQLite file).
COPY . .
RUN mkdir -p /app/state && chown bridge:bridge /app/state
VOLUME ["/app/state"]

USER 10001:10001

# gunicorn.conf.py binds HOST:PORT; in a container, every interface. A Whisper model named by
# WHATSAPP_TRANSCRIBE_MODEL is downloaded once into the state volume (HF_HOME).
ENV HOST=0.0.0.0 \
    PORT=5001 \
    HF_HOME=/app/state/models
EXPOSE 5001

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '5001'), timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "twilio_voice_server:app"]
