"""A plugin whose import fails: discovery must report it by name and go on."""

raise ImportError("conduit_broken needs a library this machine does not have (deliberate)")
