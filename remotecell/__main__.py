from remotecell.cli import main

main()
