"""The gunicorn entry point: ``gunicorn wsgi:app``."""

from core.config import Config
from gateway.app import create_app

app = create_app(Config.from_env())
