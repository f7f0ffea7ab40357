app/main.c
