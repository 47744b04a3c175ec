from stylecap.cli import main

main()
