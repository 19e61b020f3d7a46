# Tally as a small, static, non-root image:
#   docker build -t tally .
#   docker run --rm -p 8080:8080 -e TALLY_ENV=production -e TALLY_JWT_SECRET=… \
#     -e DATABASE_URL=postgres://… tally
# compose.yaml runs it beside PostgreSQL.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Pure Go (the SQLite driver included), so the binary needs no C library.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/tally ./cmd/tally \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tally /tally
# A writable directory for an SQLite database (DATABASE_URL=/data/tally.db)
# and the development secret; PostgreSQL needs nothing on disk.
COPY --from=build --chown=nonroot:nonroot /out/data /data
WORKDIR /data
USER nonroot:nonroot
ENV TALLY_ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["/tally", "health"]
ENTRYPOINT ["/tally"]
CMD ["serve"]
