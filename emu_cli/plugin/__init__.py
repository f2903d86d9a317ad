"""The plugin contract: hook specifications, the registry that loads plugins, and the classes a
plugin implements (backend, judge, panel, prompt set; the filter contract is
:mod:`emu_cli.curate.filter`). ``docs/plugins.md`` is the guide."""
