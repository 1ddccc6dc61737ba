from facepii.cli import main

main()
