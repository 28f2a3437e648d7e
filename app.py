"""Start Atelier's chat, the main job: `python app.py` (or `python -m app`) serves it on ATELIER_CHAT_HOST:PORT.

The chat itself lives in atelier/chat/; this file only starts it (`--allow-unauthenticated` is passed on).
"""

from atelier.chat import main

if __name__ == "__main__":
    main()
