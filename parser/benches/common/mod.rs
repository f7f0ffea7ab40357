//! The generated Dockerfile shared by the benchmark and `examples/gen_dockerfile.rs`.

/// A realistic mix of instructions: continuations, flags, JSON and shell forms, ENV/LABEL
/// lists, heredocs, multi-stage FROMs. Exactly `n` instructions.
pub fn dockerfile(n: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm\n");
    let mut count = 1;
    let mut i = 0;
    while count < n {
        let stmt = match i % 12 {
            0 => format!("FROM --platform=$BUILDPLATFORM ${{BASE}} AS stage{i}\n"),
            1 => format!(
                "RUN --mount=type=cache,target=/var/cache/apt{i} apt-get update \\\n    && apt-get install -y --no-install-recommends \\\n        curl git make \\\n    && rm -rf /var/lib/apt/lists/*\n"
            ),
            2 => format!("COPY --from=stage0 --chown=1000:1000 --link src/{i}/ /app/src/{i}/\n"),
            3 => format!("ENV PATH=/opt/{i}/bin:$PATH LANG=C.UTF-8 HOME=\"/home/user {i}\"\n"),
            4 => format!("LABEL org.opencontainers.image.version=\"{i}\" maintainer=team\n"),
            5 => format!("RUN [\"/bin/sh\", \"-c\", \"echo step {i} && make -j2 target{i}\"]\n"),
            6 => format!("WORKDIR /app/{i}\n"),
            7 => format!("RUN <<EOF\nset -e\necho heredoc {i}\nmake install\nEOF\n"),
            8 => format!("ARG VERSION_{i}=1.{i}.0\n"),
            9 => format!(
                "HEALTHCHECK --interval=30s --timeout=3s CMD curl -f http://localhost:{i}/ || exit 1\n"
            ),
            10 => format!("EXPOSE {i}/tcp 443\n"),
            _ => format!("USER app{i}:app\n"),
        };
        s.push_str(&stmt);
        count += 1;
        i += 1;
    }
    s
}
