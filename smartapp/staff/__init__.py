"""Staff: sign-in, sessions, the coaches' worklist and the program console."""
