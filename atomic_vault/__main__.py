from atomic_vault.cli import main

main()
