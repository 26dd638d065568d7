SELECT id, product_id, body FROM reviews WHERE moderated_at IS NULL ORDER BY created_at LIMIT 20;
