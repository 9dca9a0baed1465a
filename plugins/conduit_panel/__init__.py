"""The control panel for the shift crew: a web page and a JSON API served by the running conduit.

A built-in plugin registered through the ``conduit`` entry point group exactly
like an outside one; it is a *service* (``conduit.service.Service``) that runs
in the engine's nursery with the engine's control API; its commands (``conduit
status``, ``conduit ctl``) come in through ``conduit_register_commands``. See docs/panel.md.
"""
