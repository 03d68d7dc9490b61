"""Receive: the C-STORE/C-ECHO SCP, the incoming spool, and what makes a study stable."""
