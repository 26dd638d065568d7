SELECT id, customer_id, total FROM orders WHERE status = 'paid' ORDER BY created_at LIMIT 50;
