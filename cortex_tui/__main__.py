from cortex_tui.app import main

main()
