"""The package as users get it: the wheel and the sdist, installed in a clean virtual
environment."""
