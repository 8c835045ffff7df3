"""Where keys live: the tables, the engine, the query functions, the verifier's lookup and the migrations."""
