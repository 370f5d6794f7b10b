"""EC2 Image Builder's import operations: ``models`` (state), ``validation`` (the request
checks in AWS's words), ``responses`` (REST-JSON)."""
