from emu_cli.cli import main

main()
