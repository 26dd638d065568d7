\set o random(1, 300000 * :scale)
UPDATE orders SET status = 'delivered', shipped_at = now() WHERE id = :o;
