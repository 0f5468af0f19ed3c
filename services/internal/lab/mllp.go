package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
)

// MLLP (the Minimal Lower Layer Protocol of HL7) frames each message as
// <VT> message <FS><CR>, and the receiver answers each with a framed ACK.
const (
	startBlock = 0x0b
	endBlock   = 0x1c
	carriage   = 0x0d
	// maxFrame bounds one message, like the RPC's 1 MiB.
	maxFrame = 1 << 20
	// idleTimeout closes a connection that sends nothing for this long.
	idleTimeout = 10 * time.Minute
)

// ServeMLLP accepts MLLP connections on lis until ctx ends. Messages are
// imported for the configured community and lab center: MLLP carries no
// token, so the listener must only be reachable from trusted analyzers.
func (s *Service) ServeMLLP(ctx context.Context, lis net.Listener) error {
	c := auth.ServiceCaller(s.cfg.MLLPCommunity, "facilities/"+s.cfg.MLLPFacility, Name+"-mllp")
	stop := context.AfterFunc(ctx, func() { lis.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := lis.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("mllp: %w", err)
		}
		wg.Go(func() { s.serveMLLPConn(ctx, c, conn) })
	}
}

func (s *Service) serveMLLPConn(ctx context.Context, c auth.Caller, conn net.Conn) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r := bufio.NewReader(conn)
	for {
		conn.SetReadDeadline(time.Now().Add(idleTimeout))
		msg, err := readFrame(r)
		if errors.Is(err, io.EOF) || ctx.Err() != nil {
			return
		}
		if err != nil {
			s.logger.WarnContext(ctx, "closing an MLLP connection", "remote", conn.RemoteAddr().String(), "error", err.Error())
			return
		}
		ackText := ""
		resp, err := s.importHL7(ctx, c, msg)
		if err != nil {
			// The store failed and nothing was kept: AR tells the sender
			// to send the message again.
			s.logger.ErrorContext(ctx, "HL7 import failed; answering AR", "error", err.Error())
			ackText = ack(nil, c, s.clock.Now(), labv1.AckCode_ACK_CODE_AR, []importError{{errApplication, "temporarily unable to store the message; send it again"}})
		} else {
			ackText = resp.GetAck()
		}
		frame := append(append([]byte{startBlock}, ackText...), endBlock, carriage)
		if _, err := conn.Write(frame); err != nil {
			return
		}
	}
}

// readFrame reads one MLLP frame and returns the message inside it.
func readFrame(r *bufio.Reader) ([]byte, error) {
	b, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	if b != startBlock {
		return nil, fmt.Errorf("mllp: frame starts with %#x, not <VT>", b)
	}
	var buf bytes.Buffer
	for {
		b, err := r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("mllp: frame cut short: %w", io.ErrUnexpectedEOF)
		}
		if b == endBlock {
			if next, err := r.ReadByte(); err != nil || next != carriage {
				return nil, errors.New("mllp: <FS> not followed by <CR>")
			}
			return buf.Bytes(), nil
		}
		if buf.Len() == maxFrame {
			return nil, fmt.Errorf("mllp: message longer than %d bytes", maxFrame)
		}
		buf.WriteByte(b)
	}
}
