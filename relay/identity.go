package relay

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Node identity under relay TLS.
//
// The secret handshake proves that both ends hold the cluster secret, not
// which node each is: any holder of the secret could claim any node id.
// With relay TLS on, every node's certificate must name its node id (a DNS
// SAN or the CN), and each end proves the id it claims:
//
//   - the listener presents its certificate in the TLS handshake; the dialer
//     checks that it names the node id of the Accept (and of the node it
//     meant to reach);
//   - zinx's TLS server cannot ask for client certificates, so the dialer
//     proves its id inside the Auth frame: it appends its certificate chain
//     and a signature, with the certificate's key, over the listener's fresh
//     nonce, its own nonce and its node id. The listener verifies the chain
//     against the CA, that the leaf names the claimed id, and the signature.
//
// A node whose certificate does not name its own id refuses to start
// (ErrTLSConfig).

// labelCert starts what a dialer signs to prove its certificate.
const labelCert = "zc-relay-client-cert"

// maxProofLen bounds the certificate proof appended to an Auth frame.
const maxProofLen = 64 << 10

// ErrIdentity is wrapped in ErrHandshake when a peer's certificate does
// not name the node id it claims (relay TLS on).
var ErrIdentity = errors.New("relay: certificate does not match the node id")

// certNames reports whether cert names nodeID: a DNS SAN or the CN.
func certNames(cert *x509.Certificate, nodeID string) bool {
	return slices.Contains(cert.DNSNames, nodeID) || cert.Subject.CommonName == nodeID
}

// proofDigest is what the dialer signs.
func proofDigest(nonceS, nonceC, nodeID []byte) []byte {
	h := sha256.New()
	h.Write([]byte(labelCert))
	h.Write(nonceS)
	h.Write(nonceC)
	h.Write(nodeID)
	return h.Sum(nil)
}

// appendProof appends the dialer's certificate proof to an Auth payload:
// sigLen u16 | sig | count u8 | (certLen u32 | DER)*.
func appendProof(p []byte, cert *tls.Certificate, nonceS, nonceC, nodeID []byte) ([]byte, error) {
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: the relay key cannot sign", ErrTLSConfig)
	}
	digest := proofDigest(nonceS, nonceC, nodeID)
	var sig []byte
	var err error
	if _, ed := signer.Public().(ed25519.PublicKey); ed {
		sig, err = signer.Sign(rand.Reader, digest, crypto.Hash(0))
	} else {
		sig, err = signer.Sign(rand.Reader, digest, crypto.SHA256)
	}
	if err != nil {
		return nil, fmt.Errorf("signing the certificate proof: %w", err)
	}
	if len(cert.Certificate) == 0 || len(cert.Certificate) > 8 {
		return nil, fmt.Errorf("%w: %d certificates in the chain", ErrTLSConfig, len(cert.Certificate))
	}
	p = binary.BigEndian.AppendUint16(p, uint16(len(sig)))
	p = append(p, sig...)
	p = append(p, byte(len(cert.Certificate)))
	for _, der := range cert.Certificate {
		p = binary.BigEndian.AppendUint32(p, uint32(len(der)))
		p = append(p, der...)
	}
	return p, nil
}

// verifyProof checks a dialer's certificate proof (the bytes after the MAC
// of its Auth frame): the chain leads to roots (nil: the system roots), the
// leaf names nodeID, and the signature over the nonces and nodeID is the
// leaf key's.
func verifyProof(proof []byte, roots *x509.CertPool, nonceS, nonceC, nodeID []byte) error {
	if len(proof) == 0 {
		return errors.New("no certificate proof (is the peer running relay TLS?)")
	}
	if len(proof) > maxProofLen {
		return fmt.Errorf("certificate proof of %d bytes", len(proof))
	}
	if len(proof) < 2 {
		return errors.New("short certificate proof")
	}
	sigLen := int(binary.BigEndian.Uint16(proof))
	proof = proof[2:]
	if len(proof) < sigLen+1 {
		return errors.New("short certificate proof")
	}
	sig, proof := proof[:sigLen], proof[sigLen:]
	n := int(proof[0])
	proof = proof[1:]
	if n == 0 {
		return errors.New("no certificate in the proof")
	}
	certs := make([]*x509.Certificate, 0, n)
	for range n {
		if len(proof) < 4 {
			return errors.New("short certificate proof")
		}
		l := int(binary.BigEndian.Uint32(proof))
		proof = proof[4:]
		if l > len(proof) {
			return errors.New("short certificate proof")
		}
		c, err := x509.ParseCertificate(proof[:l])
		if err != nil {
			return fmt.Errorf("bad certificate: %w", err)
		}
		certs = append(certs, c)
		proof = proof[l:]
	}
	if len(proof) != 0 {
		return errors.New("trailing bytes after the certificate proof")
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("certificate not trusted: %w", err)
	}
	if !certNames(leaf, string(nodeID)) {
		return fmt.Errorf("%w: certificate (CN %q, DNS %v) does not name %q", ErrIdentity, leaf.Subject.CommonName, leaf.DNSNames, nodeID)
	}
	digest := proofDigest(nonceS, nonceC, nodeID)
	ok := false
	switch pub := leaf.PublicKey.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(pub, digest, sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest, sig) == nil
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, digest, sig)
	default:
		return fmt.Errorf("unsupported key type %T", leaf.PublicKey)
	}
	if !ok {
		return errors.New("certificate proof signature does not verify")
	}
	return nil
}
