"""python -m pcapsmtp"""

from pcapsmtp.cli import main

main()
