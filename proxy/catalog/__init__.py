"""What the gateway knows about models: hosted specs and model facts (`specs`), list prices (`prices`)."""
