"""The directory worker: who each customer is (name, email) and each space's dead letters, for the console."""
