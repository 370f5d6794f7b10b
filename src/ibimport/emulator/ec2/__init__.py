"""EC2's VM import tasks: ``models`` (the tasks), ``responses`` (the query protocol)."""
