"""lifecyclefs's filesystem and command line: container lifecycle state as files.

`lifecyclefs mount SOURCE MOUNTPOINT` shows every state directory below SOURCE as a
directory holding `started_at`, `create_error` and `lifecycle.json`; `cat` reads a
fresh snapshot, `echo ... >` goes through one locked, atomic `store` transform.
"""
