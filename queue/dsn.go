package queue

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/sluicemail/sluice/builtins"
)

// SendDSN queues a delivery status notification (RFC 3464) to the sender
// of env: action "failed" for the recipients that failed, "delayed" for
// those still pending. It goes from the null sender, so it is never
// bounced itself.
func (d *Deliverer) SendDSN(env *Envelope, msg []byte, action string) error {
	cfg := d.relay.DeliveryConfig()
	now := d.now()
	id := d.relay.NewID(now)
	var rcpts []RcptState
	for _, r := range env.Rcpts {
		if (action == "failed" && r.Status == StatusFailed) || (action == "delayed" && r.Status == StatusPending) {
			rcpts = append(rcpts, r)
		}
	}
	if len(rcpts) == 0 {
		return nil
	}
	boundary := id + "/" + cfg.Hostname
	var b bytes.Buffer
	subject := "Undelivered Mail Returned to Sender"
	if action == "delayed" {
		subject = "Delayed Mail (still being retried)"
	}
	fmt.Fprintf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", cfg.Hostname)
	fmt.Fprintf(&b, "To: <%s>\r\n", env.From)
	fmt.Fprintf(&b, "Subject: %s\r\n", subject)
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s.dsn@%s>\r\n", id, cfg.Hostname)
	b.WriteString("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n", boundary)
	b.WriteString("This is a MIME-encapsulated message.\r\n\r\n")

	fmt.Fprintf(&b, "--%s\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", boundary)
	fmt.Fprintf(&b, "This is the mail system at host %s.\r\n\r\n", cfg.Hostname)
	if action == "failed" {
		b.WriteString("I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients. It's attached below.\r\n\r\n")
	} else {
		fmt.Fprintf(&b, "Your message could not be delivered for %s.\r\nIt will be retried until it is %s old.\r\nYou do not need to send it again.\r\n\r\n",
			now.Sub(env.Received).Round(time.Minute), cfg.MaxAge)
	}
	for _, r := range rcpts {
		fmt.Fprintf(&b, "<%s>: %s\r\n", r.Addr, oneLine(r.Detail))
	}
	fmt.Fprintf(&b, "\r\nQueue id: %s\r\n\r\n", env.ID)

	fmt.Fprintf(&b, "--%s\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n", boundary)
	fmt.Fprintf(&b, "Reporting-MTA: dns; %s\r\nX-Sluice-Queue-ID: %s\r\nArrival-Date: %s\r\n", cfg.Hostname, env.ID, env.Received.Format(time.RFC1123Z))
	for _, r := range rcpts {
		status := r.Enhanced
		if status == "" {
			if action == "failed" {
				status = "5.0.0"
			} else {
				status = "4.0.0"
			}
		}
		fmt.Fprintf(&b, "\r\nFinal-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\n", r.Addr, action, status)
		if r.Remote != "" && r.Remote != "local" {
			fmt.Fprintf(&b, "Remote-MTA: dns; %s\r\n", r.Remote)
		}
		if r.Code != 0 {
			fmt.Fprintf(&b, "Diagnostic-Code: smtp; %d %s\r\n", r.Code, oneLine(r.Detail))
		}
		if !r.At.IsZero() {
			fmt.Fprintf(&b, "Last-Attempt-Date: %s\r\n", r.At.Format(time.RFC1123Z))
		}
		if action == "delayed" {
			fmt.Fprintf(&b, "Will-Retry-Until: %s\r\n", env.Received.Add(cfg.MaxAge).Format(time.RFC1123Z))
		}
	}
	b.WriteString("\r\n")
	fmt.Fprintf(&b, "--%s\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n", boundary)
	h, _ := builtins.ParseHeader(msg)
	if h != nil {
		b.Write(msg[:h.BodyOffset()])
	}
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)

	dsn := &Envelope{ID: id, From: "", Rcpts: []RcptState{{Addr: env.From, Status: StatusPending}}, Received: now.UTC(),
		Size: b.Len(), Action: "dsn-" + action, Bounce: true, NextAttempt: now.UTC(), Reason: "DSN for " + env.ID}
	if err := d.Put(AreaQueue, dsn, b.Bytes()); err != nil {
		return err
	}
	d.log.Info("dsn queued", "id", id, "for", env.ID, "action", action, "to", env.From)
	d.Enqueue(id, dsn.NextAttempt)
	return nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
