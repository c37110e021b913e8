from suspensions.cli import app

app(prog_name="suspensions")
