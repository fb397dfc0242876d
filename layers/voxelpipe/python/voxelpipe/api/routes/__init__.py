"""The API's routes, one router per resource; each route checks the caller and calls one function."""
