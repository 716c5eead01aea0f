"""The index sink: feeds the query API's SQLite index from what the files hold."""
