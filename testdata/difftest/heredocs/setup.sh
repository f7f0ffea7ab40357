# BuildKit makes heredoc files with mode 0644; the reference copies these from the context.
chmod 0644 heredoc-src/*
