"""`meshproof audit` and `meshproof what-if`: a user's whole mesh, read from its manifests, predicted pair by
pair by the oracle (suites/expectations.py). Nothing here ever writes to a cluster."""
