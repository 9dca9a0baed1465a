"""One module per ``conduit`` sub-command (imported only when that command runs)."""
