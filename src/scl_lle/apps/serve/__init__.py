"""The web server (``server``) and its page (``static/index.html``)."""
