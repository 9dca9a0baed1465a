"""The core's sub-commands, one module each (imported only when that command runs), registered by
:mod:`.plugin` through the ``conduit_register_commands`` hook like any plugin's.

:mod:`.common` is public: a plugin's command that takes a pipeline file uses its
``add_pipeline_arguments(parser)`` and ``load_or_report(args)``.
"""
