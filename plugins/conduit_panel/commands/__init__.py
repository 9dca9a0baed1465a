"""``conduit status`` and ``conduit ctl``: the panel's JSON API from a terminal (and for scripts)."""
