from facepii.launch import main

main()
