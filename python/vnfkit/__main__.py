from vnfkit.cli import main

if __name__ == "__main__":  # guarded: worker processes (spawn) import the main module again
    raise SystemExit(main())
