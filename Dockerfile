# Multi-stage build: a static binary on a distroless, non-root base.
FROM golang:1.26-bookworm AS build
# go.mod needs Go 1.27; the image's Go fetches it through the module proxy.
ENV GOTOOLCHAIN=go1.27.3
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/aopguard ./cmd/aopguard

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/aopguard /usr/local/bin/aopguard
USER nonroot:nonroot
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/aopguard"]
CMD ["run", "--config", "/etc/aopguard/aopguard.yaml"]
