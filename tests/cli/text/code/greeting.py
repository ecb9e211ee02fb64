# café: non-ASCII in a comment
GREETING = "héllo"
