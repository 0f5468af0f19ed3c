package lab

import (
	"context"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
)

// The critical-value loop itself is package critical, shared with the other
// centers; these are the lab's RPCs over it.

// GetCriticalNotification returns a notification the caller may see.
func (s *Service) GetCriticalNotification(ctx context.Context, req *labv1.GetCriticalNotificationRequest) (*labv1.GetCriticalNotificationResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	n, err := s.critical.Get(ctx, s.store, c, req.GetName())
	if err != nil {
		return nil, err
	}
	return &labv1.GetCriticalNotificationResponse{Notification: n}, nil
}

// ListCriticalNotifications lists the notifications the caller may see.
func (s *Service) ListCriticalNotifications(ctx context.Context, req *labv1.ListCriticalNotificationsRequest) (*labv1.ListCriticalNotificationsResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	list, next, err := s.critical.List(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), req.GetState())
	if err != nil {
		return nil, err
	}
	return &labv1.ListCriticalNotificationsResponse{Notifications: list, NextPageToken: next}, nil
}

// AcknowledgeCriticalNotification acknowledges a notification for the
// ordering facility.
func (s *Service) AcknowledgeCriticalNotification(ctx context.Context, req *labv1.AcknowledgeCriticalNotificationRequest) (*labv1.AcknowledgeCriticalNotificationResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	n, err := s.critical.Acknowledge(ctx, s.store, c, s.clock.Now(), req.GetName(), req.GetReadBack())
	if err != nil {
		return nil, err
	}
	return &labv1.AcknowledgeCriticalNotificationResponse{Notification: n}, nil
}
