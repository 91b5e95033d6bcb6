from alexkit.cli import main

main()
