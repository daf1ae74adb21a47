"""The frozen application's entry script (PyInstaller runs this file as ``__main__``).

`multiprocessing.freeze_support()` must come first: training runs in a spawned child process, and in a
frozen build that child is this same executable started with multiprocessing's own arguments, which
freeze_support recognises (it runs the child's work and exits) before `main` could read them as a command.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from app.main import main

    sys.exit(main())
