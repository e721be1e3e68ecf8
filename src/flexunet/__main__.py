from flexunet.cli.main import run

run()
