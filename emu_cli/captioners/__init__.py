"""The built-in captioners, registered as a plugin (:mod:`emu_cli.captioners.plugin`)."""
